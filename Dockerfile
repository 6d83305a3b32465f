# The gateway in a container: `docker build -t mcp-sandbox-gateway .`
# `docker run -p 8811:8811 -v mcp-gateway:/data mcp-sandbox-gateway serve --host 0.0.0.0 --servers time`
# (set --public-url to the URL clients use; the data volume keeps keys, tokens and sandboxes)
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm git bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY catalog ./catalog
# Editable: the gateway finds catalog/ (and relative fixture paths) next to its package.
RUN pip install --no-cache-dir -e ".[fast]"

ENV MCP_GATEWAY_HOME=/data
VOLUME /data
EXPOSE 8811
ENTRYPOINT ["mcp-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--servers", "time"]
