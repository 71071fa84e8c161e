"""What a verification reports: findings with a severity, and the result that groups them.

A finding is meant for two readers: `kind` and `subject` are stable machine names (tests, alerting,
a health endpoint), `message` is one line a person can act on, and `details` carries the evidence
(expected and actual values, counts, example ids) as plain JSON values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# the attribute of a log record that reports a finding (its kind): a caller that shows the findings with its
# result, as the CLI does, leaves those records out of its progress output
FINDING_RECORD = "langlearn_finding"

class Severity(str, Enum):
    """An error is something the models need that the database lacks or has differently;
    a warning is something extra the models don't know about."""

    ERROR = "error"
    WARNING = "warning"


CHECKS = ("schema", "migrations", "invariants")


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str  # one of CHECKS
    kind: str  # e.g. "missing_index", "default_differs", "pending_migration"
    subject: str  # e.g. "lessons.idx_lesson_unit_order"
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "check": self.check,
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "details": self.details,
        }


def error(check: str, kind: str, subject: str, message: str, **details: Any) -> Finding:
    return Finding(Severity.ERROR, check, kind, subject, message, details)


def warning(check: str, kind: str, subject: str, message: str, **details: Any) -> Finding:
    return Finding(Severity.WARNING, check, kind, subject, message, details)


@dataclass(frozen=True)
class VerificationResult:
    """The findings of one verification, and which checks ran to produce them."""

    findings: tuple[Finding, ...] = ()
    checks: tuple[str, ...] = CHECKS

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        """Nothing found, not even a warning (use `errors` to tolerate warnings)."""
        return not self.findings

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "checks": list(self.checks),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [finding.to_dict() for finding in self.findings],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)
