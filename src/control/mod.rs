//! control: the local control socket, HTTP/1.1 over a Unix socket, so that operators, systemd
//! and monitoring can ask the daemon how it is (`/live`, `/ready`, `/status`, `/metrics`) and
//! tell it to reload its model (`POST /reload`), with plain `curl --unix-socket`.
//!
//! - [`router`]: the routes, an axum `Router` over the daemon, which another listener can reuse.
//! - [`server`]: binding the socket safely and serving it (HTTP/1.1 on hyper).
//! - [`status`]: the `/status` document and the readiness rules.
//! - [`prometheus`]: the `/metrics` text format.
//! - [`lag`]: committed offsets and high watermarks of the input topic's partitions.
//! - [`liveness`]: broker reachability, the assignment and orphaned partitions, judged.
//! - [`client`] and [`health`]: `anomalyd ctl` and `anomalyd health`.

pub mod client;
pub mod health;
pub mod lag;
pub mod liveness;
pub mod prometheus;
pub mod router;
pub mod server;
pub mod status;
