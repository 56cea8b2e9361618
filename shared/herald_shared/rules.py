"""What every service's domain raises when a rule refuses a request (no I/O, no web framework here)."""

from __future__ import annotations


class RuleRefused(Exception):
    """A domain rule refused the request; subclasses name the rule (`code`, the problem type) and its HTTP
    status. `herald_shared.http.api_app` answers them as RFC 9457 problems."""

    code = "rule_refused"
    http_status = 422

    def __init__(self, detail: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors  # (location, message) pairs, e.g. ("body.html_body", "line 3: ...")
