# dealwire — container image. Build: docker build -t dealwire .
# Run:   docker run --rm -p 8000:8000 dealwire [--db postgres://... --log-level debug ...]
# Every flag can also be given as an environment variable DEALWIRE_<FLAG> (docs/configuration.md).

# ---- build stage: compilers and -dev packages, release build, staged install under /out ------
FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential cmake pkg-config curl ca-certificates \
        libcap-dev zlib1g-dev liburcu-dev libjson-c-dev libpq-dev libssl-dev libuv1-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Tests and bench are not built here (no cmocka in this image); scripts/test.sh runs them.
# libwebsockets: Debian's source package, fetched and built by scripts/lws.sh at configure
# time (release settings, cmake/lws/*.patch), linked statically.
RUN cmake --preset release -DDW_BUILD_TESTS=OFF -DDW_BUILD_BENCH=OFF \
 && cmake --build --preset release -j"$(nproc)" \
 && cmake --install build/release --prefix /out/usr/local --strip \
 && mkdir -p /out/usr/local/share/dealwire/web

# ---- runtime stage: shared libraries only, non-root ------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        libcap2 zlib1g liburcu8 libjson-c5 libpq5 libssl3 libuv1 libhiredis0.14 \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dealwire
# The binary lands in /usr/local/bin/dealwire, web/ (when present) in
# /usr/local/share/dealwire/web (CMake install rules).
COPY --from=build /out/usr/local/ /usr/local/
USER dealwire
EXPOSE 8000
# No curl in the slim image: bash's /dev/tcp asks GET /healthz and expects "200" on the status
# line. It checks port 8000; if you move the port (--port / DEALWIRE_PORT), override or disable
# this healthcheck (docker run --no-healthcheck).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/dealwire"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
