# Sourced by scripts/demo, scripts/test and .ci/run: the Debian packages that provide the tools
# building and testing anomalyd needs, so the list lives in one place.
#
#   missing_packages build   # gcc, make, perl (librdkafka and OpenSSL build from source), python3
#   missing_packages test    # the above, plus what the tests run: systemd-analyze, setsid, tmux,
#                            # socat and openssl (tests/systemd_unit.rs, tests/demo.rs, the
#                            # broker, tests/tls.rs)
#
# prints the packages whose tool is missing, space-separated (nothing when all are there).

missing_packages() {
    local pairs=(gcc:gcc make:make perl:perl python3:python3)
    if [[ ${1:-build} == test ]]; then
        pairs+=(systemd-analyze:systemd setsid:util-linux socat:socat openssl:openssl)
        pairs+=(tmux:tmux) # tests/demo.rs runs scripts/demo in a tmux pane
    fi
    local pair out=()
    for pair in "${pairs[@]}"; do
        command -v "${pair%%:*}" >/dev/null || out+=("${pair#*:}")
    done
    echo "${out[*]}"
}

# Exits with a message naming the packages to install when any is missing.
require_packages() {
    local missing
    missing=$(missing_packages "$1")
    if [[ -n $missing ]]; then
        echo "missing tools; install them first: sudo apt-get install $missing" >&2
        exit 1
    fi
}
