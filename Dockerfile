# syntax=docker/dockerfile:1
# Build: docker build -t oci-gateway .
# Run:   docker run --stop-timeout 30 -p 5000:5000 -v gateway-data:/data oci-gateway
# (on SIGTERM the gateway lets requests in progress finish for up to 25 s; docker stop waits 10 s by default)

FROM node:20-bookworm-slim AS build
# node-gyp builds the page-cache addon (native/page-cache.c) during npm ci, against the
# image's own Node headers.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
WORKDIR /app
COPY package.json package-lock.json tsconfig.json binding.gyp ./
COPY native ./native
COPY scripts ./scripts
COPY src ./src
RUN npm ci --no-audit --no-fund && test -f build/Release/page_cache.node && npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
# Real Trivy for the vulnerability gate (the tests use a stand-in). Its database is not
# downloaded here: mount or seed one at GATEWAY_SCANNER_CACHE_DIR
# (`trivy image --download-db-only --cache-dir /data/trivy` on a connected machine).
ARG TRIVY_VERSION=0.74.0
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/trivy.deb "https://github.com/aquasecurity/trivy/releases/download/v${TRIVY_VERSION}/trivy_${TRIVY_VERSION}_Linux-64bit.deb" \
 && dpkg -i /tmp/trivy.deb && rm /tmp/trivy.deb \
 && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    GATEWAY_HTTP_ADDR=0.0.0.0:5000 \
    GATEWAY_STORAGE_ROOT=/data \
    GATEWAY_POLICY_DIR=/app/policies \
    GATEWAY_SCANNER_CACHE_DIR=/data/trivy
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/page_cache.node ./build/Release/page_cache.node
COPY package.json ./
COPY policies ./policies
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:5000/readyz').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
ENTRYPOINT ["node", "--initial-old-space-size=128", "dist/src/gateway.cjs"]
CMD ["serve"]
