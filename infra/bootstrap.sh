#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine for SMS development and tests (run as root).
# Installs the Debian packages the test bed starts (MariaDB and Galera, OpenSSH, ksh, PostgreSQL, Prometheus, Wine, HAProxy, Redis), creates .venv at the
# repository root and installs the project with its test extras into it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    echo "bootstrap: $*" >&2
    exit 1
}

# chromium: the browser of the console's end-to-end test (driven by Playwright; no browser download).
# hyperfine: the command-line timer of bench/cli_startup.py.
# maven: the Elasticsearch and Keycloak test-bed peers fetch their distributions with `mvn dependency:get`
# (Elasticsearch 9 also needs a Java 21+ JDK in /usr/lib/jvm, which Debian 12 does not ship).
# haproxy: the HA topology's load balancer and the TLS proxy the test bed puts in front of peers without
# TLS of their own (docs/tls.md); redis-server, galera-4, rsync: the HA topology (infra/ha: Prefect's Redis
# messaging, the catalog's Galera cluster and its state transfers).
packages=(mariadb-server openssh-server openssh-client ksh procps python3 python3-venv postgresql wine prometheus maven openjdk-17-jre-headless hyperfine chromium
    haproxy redis-server galera-4 rsync)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages: ${missing[*]}; run this script as root"
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep package scripts from starting the system's own mariadb/sshd services: the test bed
    # starts private instances itself.
    policy=/usr/sbin/policy-rc.d
    added_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=true
    fi
    status=0
    {
        apt-get update -qq >/dev/null &&
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    } || status=$?
    if $added_policy; then rm -f "$policy"; fi
    ((status == 0)) || die "apt-get could not install: ${missing[*]} (exit $status)"
fi

# The unprivileged account scripts on the worker's own machine run as (LocalHost.run_as, docs/hosts.md).
if [[ $(id -u) -eq 0 ]] && ! id -u sms-run >/dev/null 2>&1; then
    useradd --system --create-home --home-dir /var/lib/sms-run --shell /usr/sbin/nologin sms-run ||
        die "useradd sms-run failed"
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv"
    python3 -m venv .venv || die "python3 -m venv .venv failed"
fi

# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.sms-bootstrap-stamp
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
    echo "bootstrap: installing the project into .venv (pip install -e '.[test]')"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" ||
        die "pip install -e '.[test]' failed"
    echo "$wanted" >"$stamp"
fi

# The Kafka test-bed broker: org.apache.kafka:kafka_2.13 and its runtime dependencies, resolved by
# Maven into the test-bed cache outside the clone (once per machine; infra/testbed/kafka.py).
.venv/bin/python -c "from infra.testbed.kafka import broker_jars; broker_jars()" ||
    die "could not resolve the Kafka broker's jars with Maven (infra/testbed/kafka.py)"

# The web console (console/, docs/console.md): npm ci and a production build into console/dist, only
# when its sources, lock file or build settings changed (keyed on their hash). npm's cache lives
# outside the clone so a fresh clone reuses what earlier ones downloaded.
build_console() {
    command -v npm >/dev/null || die "npm (Node.js 20+) is needed to build the console (console/)"
    local hash stamp=console/dist/.sms-build-stamp
    hash=$(find console/src console/index.html console/package.json console/package-lock.json console/tsconfig.json \
        console/vite.config.ts -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$hash" ]]; then
        return
    fi
    echo "bootstrap: building the console (npm ci && npm run build)"
    export npm_config_cache="${SMS_NPM_CACHE:-$HOME/.cache/sms-testbed/npm}"
    (cd console && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent) ||
        die "the console build failed (cd console && npm ci && npm run build)"
    echo "$hash" >"$stamp"
}
build_console
