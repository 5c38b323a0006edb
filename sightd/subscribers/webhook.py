"""`webhook`: POST each message as JSON to a URL, with a timeout and bounded retries.

Retried (with doubling backoff): connection errors, timeouts, HTTP 5xx and 429. Any other
4xx is the receiver refusing the request, and retrying would not change its mind. A label
is posted at most once per `cooldown`. The bearer token comes from an environment variable,
so it never sits in config.yaml.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from sightd import __version__
from sightd.backoff import Backoff, Cooldown
from sightd.errors import SightdError
from sightd.subscribers.base import Subscriber, SubscriberConfig, Topic

MAX_RETRY_DELAY = 60.0  # seconds: a retry further off than this is no longer worth waiting for


class WebhookConfig(SubscriberConfig):
    url: str = Field(description="http:// or https:// URL that receives the POST")
    timeout: float = Field(5.0, gt=0, le=300, description="seconds per attempt")
    retries: int = Field(3, ge=0, le=10, description="attempts after the first one")
    backoff: float = Field(0.5, ge=0, le=60, description="seconds before the first retry; doubles")
    cooldown: float = Field(0.0, ge=0, description="seconds before the same label posts again")
    headers: dict[str, str] = Field({}, description="extra request headers")
    token_env: str | None = Field(None, description="env variable holding a bearer token")

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _retries_fit_the_deadline(self):
        if self.handler_timeout <= worst_case_seconds(self):
            raise ValueError(
                f"timeout x attempts plus backoff can take {worst_case_seconds(self):g} s, more "
                f"than handler_timeout ({self.handler_timeout:g} s); lower them or raise it"
            )
        return self


def worst_case_seconds(config: WebhookConfig) -> float:
    attempts = config.retries + 1
    return attempts * config.timeout + sum(retry_delays(config))


def retry_delays(config: WebhookConfig) -> list[float]:
    return Backoff(config.backoff, MAX_RETRY_DELAY).delays(config.retries)


class WebhookError(Exception):
    """The POST failed after every allowed attempt."""


class WebhookSubscriber(Subscriber):
    Config = WebhookConfig
    config: WebhookConfig
    default_topics: ClassVar[tuple[Topic, ...]] = ("event",)
    example: ClassVar[dict[str, Any]] = {"url": "http://127.0.0.1:8123/api/webhook/sightd"}

    def start(self) -> None:
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"sightd/{__version__}",
            **self.config.headers,
        }
        if self.config.token_env:
            token = os.environ.get(self.config.token_env)
            if not token:
                raise SightdError(
                    f"webhook: token_env names {self.config.token_env}, which is not set; "
                    f"export {self.config.token_env}=<token> or remove token_env"
                )
            self.headers["Authorization"] = f"Bearer {token}"
        self.cooldown = Cooldown(self.config.cooldown)
        self.retry_delays = retry_delays(self.config)
        self.counts = {"posts": 0, "retries": 0, "skipped": 0}

    def handle(self, message: dict[str, Any]) -> None:
        if not self.cooldown.ready(str(message.get("label", ""))):
            self.counts["skipped"] += 1
            return
        self._post(json.dumps(message, allow_nan=False).encode())
        self.counts["posts"] += 1

    def _post(self, body: bytes) -> None:
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.counts["retries"] += 1
                time.sleep(self.retry_delays[attempt - 1])
            problem = self._attempt(body)
            if problem is None:
                return
            retry, why = problem
            if not retry:
                break
        raise WebhookError(f"POST {self.config.url} failed after {attempt + 1} attempts: {why}")

    def _attempt(self, body: bytes) -> tuple[bool, str] | None:
        """None on success, else (worth retrying, what went wrong)."""
        request = urllib.request.Request(self.config.url, body, self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                response.read(64 * 1024)
            return None
        except urllib.error.HTTPError as exc:
            return exc.code >= 500 or exc.code == 429, f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            return True, str(getattr(exc, "reason", exc))

    def figures(self) -> dict[str, Any]:
        return dict(self.counts)
