# The gateway in a container: `docker build -t mcp-sandbox-gateway .`
#   docker run -p 8811:8811 -v mcp-gateway:/data \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     mcp-sandbox-gateway serve --host 0.0.0.0 --runtime bwrap --servers time
# Set --public-url to the URL clients use; the data volume keeps keys, tokens and sandboxes.
# The token is in the volume (/data/token; `docker exec CONTAINER cat /data/token`).
#
# Servers run under bubblewrap inside the container (--runtime bwrap: refuse to start a server
# rather than fall back to running it unconfined), so they cannot read /data (keys, secrets).
# bwrap needs user namespaces, which the default seccomp/AppArmor profiles of Docker refuse:
# hence the two --security-opt flags above. Podman's rootless default allows them.

# Node 20 (for the npm servers): Debian bookworm ships Node 18, so node and npm are copied from the
# official Node 20 image onto the Python one.
FROM node:20-bookworm-slim AS node

FROM python:3.11-slim-bookworm

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npm --version

# tini: PID 1 that forwards signals and reaps orphans; git for catalog pulls; bubblewrap for servers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini git bubblewrap ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY catalog ./catalog
# Editable: the gateway finds catalog/ next to its package.
RUN pip install --no-cache-dir -e ".[fast]"

# A non-root user owns the data dir (mode 0700); nothing else in the image is writable by it.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/gateway gateway \
    && mkdir -p /data && chown gateway:gateway /data && chmod 0700 /data
USER gateway
ENV MCP_GATEWAY_HOME=/data \
    MCP_GATEWAY_HIDE_TOKEN=1
VOLUME /data
EXPOSE 8811

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8811/healthz', timeout=4)"]

ENTRYPOINT ["tini", "--", "mcp-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--runtime", "bwrap", "--servers", "time"]
