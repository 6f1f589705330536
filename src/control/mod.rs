//! control: the local control socket, HTTP/1.1 over a Unix socket, so that operators, systemd
//! and monitoring can ask the daemon how it is (`/live`, `/ready`, `/status`, `/metrics`) and
//! tell it to reload its model (`POST /reload`), with plain `curl --unix-socket`.
//!
//! - [`http`]: the little HTTP/1.1 the socket speaks (one request per connection).
//! - [`server`]: binding the socket safely and routing requests.
//! - [`status`]: the `/status` document and the readiness rules.
//! - [`prometheus`]: the `/metrics` text format.
//! - [`lag`]: committed offsets and high watermarks of the input topic's partitions.
//! - [`liveness`]: broker reachability, the assignment and orphaned partitions, judged.
//! - [`client`] and [`health`]: `anomalyd ctl` and `anomalyd health`.

pub mod client;
pub mod health;
pub mod http;
pub mod lag;
pub mod liveness;
pub mod prometheus;
pub mod server;
pub mod status;
