"""The pydantic schema of bridge.yaml and the files it includes.

Every model rejects unknown keys, so a typo is an error with its file, line and key path
rather than a setting that silently does nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TcpListenerConfig(Strict):
    """An optional TCP listener; every request on it must carry a client key."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class AdminAccessConfig(Strict):
    """The callers allowed on /admin/*, besides the daemon's own uid and root, which always are."""

    uids: list[int] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    clients: list[str] = Field(default_factory=list)  # names under `clients:` with a key


class ServerConfig(Strict):
    socket: str | None = None
    socket_mode: str = "0600"
    socket_group: str | None = None  # group name the socket is chowned to; needs a mode like 0660
    state_dir: str | None = None
    log_level: str | None = None
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # NORMAL: a committed ledger row survives a killed daemon but not a power cut; FULL survives
    # both at the price of an fsync per group commit.
    ledger_sync: Literal["NORMAL", "FULL"] = "NORMAL"
    # Unset: every peer that can open the socket is served. Set: only these uids or members of
    # these groups, plus callers that present a client key.
    allow_uids: list[int] | None = None
    allow_groups: list[str] | None = None
    # False: a bearer token that matches no client is ignored and the peer uid identifies the
    # caller, because the official OpenAI SDKs always send one. True: it is a 401.
    require_client_key: bool = False
    admin: AdminAccessConfig = AdminAccessConfig()
    tcp: TcpListenerConfig | None = None
    max_messages: int = Field(default=2048, ge=1)  # messages in one chat request
    max_content_chars: int = Field(default=4_000_000, ge=1)  # text characters in one request
    max_json_depth: int = Field(default=64, ge=8, le=500)  # nesting of arrays and objects

    @field_validator("socket_mode")
    @classmethod
    def _octal_mode(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError(f'socket_mode "{value}" is not an octal file mode such as "0600"') from None
        if not 0 <= mode <= 0o777:
            raise ValueError(f'socket_mode "{value}" is outside 0000..0777')
        return value


class _ProviderBase(Strict):
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)


class OpenAIProviderConfig(_ProviderBase):
    type: Literal["openai"]
    api_key: SecretStr | None = None
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None


class AnthropicProviderConfig(_ProviderBase):
    type: Literal["anthropic"]
    api_key: SecretStr | None = None
    base_url: str | None = None


class CohereProviderConfig(_ProviderBase):
    type: Literal["cohere"]
    api_key: SecretStr | None = None
    base_url: str | None = None


class LlamaCppProviderConfig(Strict):
    type: Literal["llama_cpp"]
    threads: int | None = Field(default=None, ge=1)


ProviderConfig = Annotated[
    OpenAIProviderConfig | AnthropicProviderConfig | CohereProviderConfig | LlamaCppProviderConfig,
    Field(discriminator="type"),
]


class PriceConfig(Strict):
    """USD per 1M tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(default=Decimal(0), ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    checked: str | None = None  # the date the price was last checked against the provider


class SamplingDefaults(Strict):
    """Sampling values a deployment uses when a request leaves them out."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)


class DeploymentConfig(Strict):
    """One upstream model on one provider (an entry under `models:`)."""

    provider: str
    model: str | None = None  # the provider's model name; a local model defaults to its file name
    path: str | None = None  # llama_cpp: a file path or pkg:PACKAGE/FILE
    context: int | None = Field(default=None, ge=16)
    max_tokens: int | None = Field(default=None, ge=1)  # default output cap when a request has none
    defaults: SamplingDefaults = SamplingDefaults()
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    price: PriceConfig | None = None
    unsupported_params: Literal["drop", "reject"] = "reject"
    input_type: str | None = None  # cohere embeddings
    embedding: bool = False  # llama_cpp: load the model for embeddings instead of chat
    enabled: bool = True


class WeightedTarget(Strict):
    target: str
    weight: float = Field(default=1.0, gt=0)


class RouteConfig(Strict):
    strategy: Literal["fallback", "weighted", "cheapest", "fastest"] = "fallback"
    targets: list[WeightedTarget] = Field(min_length=1)
    retry: str | None = None
    # Unset: the top-level terminal is appended. "none": no terminal. A name: that deployment.
    terminal: str | None = None

    @field_validator("targets", mode="before")
    @classmethod
    def _names_to_targets(cls, value: Any) -> Any:
        # A bare name is shorthand for {target: NAME, weight: 1}.
        if isinstance(value, list):
            return [{"target": entry} if isinstance(entry, str) else entry for entry in value]
        return value


class RetryPolicyConfig(Strict):
    attempts: int = Field(default=2, ge=1, le=10)  # attempts per deployment, the first included
    base_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=8.0, ge=0)
    attempt_timeout: float | None = Field(default=None, gt=0)
    deadline: float | None = Field(default=None, gt=0)  # seconds for the whole request


class BudgetConfig(Strict):
    scope: str = Field(pattern=r"^(global|(route|deployment|provider|client):.+)$")
    usd: Decimal | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    per: Literal["hour", "day", "week", "month"] | None = None
    rolling: str | None = None  # a rolling window such as "24h" instead of `per`
    timezone: str = "UTC"
    on_exceed: Literal["reject", "fallback"] = "reject"
    soft_threshold: float | None = Field(default=None, gt=0, lt=1)


class ClientConfig(Strict):
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)


class LimitsConfig(Strict):
    max_in_flight: int | None = Field(default=None, ge=1)
    queue_size: int = Field(default=1000, ge=0)
    queue_timeout: float = Field(default=10.0, ge=0)


class CooldownConfig(Strict):
    """When a failing deployment is skipped, and for how long."""

    failures: int = Field(default=3, ge=1)  # failures within `window` that start a cooldown
    window: float = Field(default=60.0, gt=0)  # seconds
    seconds: float = Field(default=30.0, gt=0)  # how long the deployment is skipped before a probe


class BridgeConfig(Strict):
    version: Literal[1]
    include: list[str] = Field(default_factory=list)
    server: ServerConfig = ServerConfig()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, DeploymentConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    terminal: str | None = None
    budgets: list[BudgetConfig] = Field(default_factory=list)
    clients: dict[str, ClientConfig] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()
    cooldown: CooldownConfig = CooldownConfig()
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)
    retry_policies: dict[str, RetryPolicyConfig] = Field(default_factory=dict)
    allow_unpriced: bool = False  # let unpriced deployments run under USD budgets
