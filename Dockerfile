# livehub: the release binary on a slim runtime image, running as a non-root user.
#
#   docker build -t livehub .
#   docker run -p 3000:3000 -e JWT_SECRET=… -e API_KEYS=… -v livehub-data:/var/lib/livehub livehub
#   docker run -p 3000:3000 livehub serve --dev        # demo board at http://localhost:3000/

# 1. The demo page (served only with --dev) and the Socket.IO Admin UI's files
#    (served at /admin/ when ADMIN_USERNAME and ADMIN_PASSWORD_HASH are set).
FROM node:20-bookworm-slim AS demo
WORKDIR /src/web-demo
COPY web-demo/package.json web-demo/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web-demo/ ./
RUN npm run build

# 2. The binary. Dependencies are built in their own layer so that source edits
#    do not rebuild them.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# 3. The runtime.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/livehub --create-home --shell /usr/sbin/nologin livehub
COPY --from=build /src/target/release/livehub /usr/local/bin/livehub
COPY --from=demo /src/web-demo/dist /usr/share/livehub/demo
USER livehub
WORKDIR /var/lib/livehub
VOLUME ["/var/lib/livehub"]
ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_URL=sqlite:///var/lib/livehub/livehub.db \
    DEMO_DIR=/usr/share/livehub/demo \
    ADMIN_UI_DIR=/usr/share/livehub/demo/admin \
    LOG_FORMAT=json
EXPOSE 3000
# Graceful drain on SIGTERM (the default stop signal) takes at most 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["livehub"]
CMD ["serve"]
