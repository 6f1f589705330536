# Sourced by scripts/demo, scripts/test and .ci/run: the tools building and testing anomalyd
# needs and the Debian packages that provide them, so the list lives in one place.
#
#   missing_packages build   # gcc, make, perl (librdkafka and OpenSSL build from source), python3
#   missing_packages test    # the above, plus what the tests run: systemd-analyze, setsid, tmux,
#                            # socat, openssl and chromium (tests/systemd_unit.rs, tests/demo.rs,
#                            # the broker, tests/tls.rs, tests/web.rs's real-browser test), and
#                            # PostgreSQL's server (postgresql: scripts/pg, tests/store_postgres.rs)
#
# prints the packages whose tool is missing, space-separated (nothing when all are there).
#
#   require_tools build|test # the packages above, and cargo; exits naming every missing one
#
# The tansu broker the demo and the tests start is installed by scripts/broker with cargo the
# first time; building it needs only cargo and gcc, both checked here.

missing_packages() {
    local pairs=(gcc:gcc make:make perl:perl python3:python3)
    if [[ ${1:-build} == test ]]; then
        pairs+=(systemd-analyze:systemd setsid:util-linux socat:socat openssl:openssl)
        pairs+=(tmux:tmux) # tests/demo.rs runs scripts/demo in a tmux pane
        pairs+=(chromium:chromium) # tests/web.rs renders the web view in headless Chromium
    fi
    local pair out=()
    for pair in "${pairs[@]}"; do
        command -v "${pair%%:*}" >/dev/null || out+=("${pair#*:}")
    done
    if [[ ${1:-build} == test ]] && ! pg_bindir >/dev/null; then
        out+=(postgresql)
    fi
    echo "${out[*]}"
}

# The folder of PostgreSQL's server binaries (initdb, pg_ctl): Debian keeps them in
# /usr/lib/postgresql/VERSION/bin, off PATH; the newest version there, else initdb on PATH.
pg_bindir() {
    local d best=
    while read -r d; do
        [[ -x $d/initdb && -x $d/pg_ctl ]] && best=$d
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    if [[ -z $best ]] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        best=$(dirname "$(command -v initdb)")
    fi
    [[ -n $best ]] && echo "$best"
}

# Exits with one message naming everything missing: the Debian packages to install and, when
# cargo is not on PATH, how to get Rust. Says so when tansu will be installed on first use.
require_tools() {
    local missing problems=()
    missing=$(missing_packages "$1")
    if [[ -n $missing ]]; then
        problems+=("Debian packages: sudo apt-get install $missing")
    fi
    if ! command -v cargo >/dev/null; then
        if [[ -x $HOME/.cargo/bin/cargo ]]; then
            problems+=("cargo is installed but not on PATH: run  source \"\$HOME/.cargo/env\"")
        else
            problems+=("Rust, a recent stable (edition 2024, let chains: 1.88 or later): https://rustup.rs")
        fi
    fi
    if ((${#problems[@]} > 0)); then
        echo "missing tools; install them first:" >&2
        printf '  %s\n' "${problems[@]}" >&2
        exit 1
    fi
    if ! command -v tansu >/dev/null && [[ ! -x $HOME/.cargo/bin/tansu ]]; then
        echo "note: the tansu broker is not installed; scripts/broker installs it with cargo" \
            "before first use (about 20 minutes on 2 cores, once)" >&2
    fi
}

# The name scripts/demo uses.
require_packages() {
    require_tools "$@"
}
