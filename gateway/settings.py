"""What ``serve`` was asked to do: one immutable object handed to every part of the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8811
DEFAULT_MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    public_url: str | None = None  # the public /mcp URL; default http://host:port/mcp
    no_auth: bool = False
    admin_key: str | None = None
    runtime: str = "auto"  # auto, host, bwrap, container
    container_engine: str | None = None
    allow_origins: tuple[str, ...] = ()
    redact: bool = True
    accept_tool_changes: bool = False
    issuer: str = "mcp-gateway"
    jwt_public_key: Path | None = None
    jwks_url: str | None = None
    metrics_port: int | None = None
    log_format: str = "text"
    log_level: str = "info"
    discovery: str = "auto"
    discovery_limit: int = 128
    prestart: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_inflight_per_sandbox: int = 64  # concurrent POSTs to /mcp per sandbox before 429
    max_sessions: int = 10_000
    max_sessions_per_sandbox: int = 1_000  # open sessions of one sandbox before its next gets 503
    call_timeout: float = 300.0
    start_timeout: float = 60.0
    idle_timeout: float = 900.0  # stop a sandbox's servers after this long without calls
    grace_period: float = 10.0
    token_ttl: int = 24 * 3600
    catalog_files: tuple[Path, ...] = field(default_factory=tuple)
    header_timeout: float = 15.0  # seconds a request's header block may take to arrive
    max_header_bytes: int = 64 * 1024  # a larger header block gets 431

    @property
    def mcp_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/mcp"

    @property
    def base_url(self) -> str:
        url = self.mcp_url
        return url[: -len("/mcp")] if url.endswith("/mcp") else url.rstrip("/")
