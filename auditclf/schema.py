"""The JSON schema (draft 2020-12) of ``report.json``; ``auditclf schema`` prints it.

A plain dict, so auditclf needs no schema library at run time; the tests
validate real reports against it with ``jsonschema`` (the ``test`` extra).
It pins what other tools may rely on (top-level layout, metric values that
are numbers or ``null``, gates, findings) and leaves the rest open (section
tables and figure data grow with new analyses).
"""

from __future__ import annotations

import json
from typing import Any

from auditclf.errors import UsageError
from auditclf.results import READABLE_VERSIONS, SCHEMA_VERSION, VERDICTS

NUMBER_OR_NULL = {"type": ["number", "null"]}
STRING_OR_NULL = {"type": ["string", "null"]}
METRIC_KEY = r"^[a-z][a-z0-9_]*(\.[a-z0-9_@/+\-]+)+$"

FINDING = {
    "type": "object",
    "required": ["severity", "message", "section"],
    "properties": {
        "severity": {"enum": ["info", "warning", "error"]},
        "message": {"type": "string"},
        "section": {"type": "string"},
        "metric": STRING_OR_NULL,
    },
}

GATE = {
    "type": "object",
    "description": "One gate outcome, or one baseline-regression entry (kind: baseline).",
    "required": ["metric", "expression", "value", "passed", "reason"],
    "properties": {
        "kind": {"enum": ["gate", "baseline"]},
        "metric": {"type": "string"},
        "key": {**STRING_OR_NULL, "description": "the key read (a CI bound for on: lower_ci)"},
        "op": {"enum": [">=", ">", "<=", "<", "==", "baseline"]},
        "threshold": NUMBER_OR_NULL,
        "severity": {"enum": ["fail", "warn"]},
        "on": {"enum": ["value", "lower_ci", "upper_ci"]},
        "missing": {"enum": ["fail", "pass"]},
        "expression": {"type": "string"},
        "value": NUMBER_OR_NULL,
        "baseline_value": NUMBER_OR_NULL,
        "ci": {
            "oneOf": [
                {"type": "null"},
                {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            ]
        },
        "passed": {"type": "boolean"},
        "status": {"enum": ["pass", "fail", "warn"]},
        "reason": {"type": "string"},
    },
}

SECTION = {
    "type": "object",
    "required": ["name", "title", "headline", "metrics", "findings"],
    "properties": {
        "name": {"type": "string"},
        "title": {"type": "string"},
        "headline": {"type": "string"},
        "method": {"type": "string"},
        "metrics": {"$ref": "#/$defs/metrics"},
        "notes": {"$ref": "#/$defs/notes"},
        "findings": {"type": "array", "items": FINDING},
        "tables": {"type": "object"},
        "figures": {"type": "object"},
        "error": STRING_OR_NULL,
    },
}

MODEL = {
    "type": "object",
    "required": ["card", "metrics", "notes", "findings", "sections"],
    "properties": {
        "card": {
            "type": "object",
            "required": ["architecture", "source", "parameters", "weights_sha256"],
            "properties": {
                "architecture": {"type": "string"},
                "source": {"type": "string"},
                "parameters": {"type": "integer", "minimum": 0},
                "weights_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "normalization": {"type": "object"},
                "target_layer": STRING_OR_NULL,
                "pretrained": {
                    "description": "the pretrained weights file the model was fine-tuned "
                    "from (model.weights): its name, SHA-256 and the replaced head, else null",
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["file", "sha256", "head"],
                            "properties": {
                                "file": {"type": "string"},
                                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                "head": STRING_OR_NULL,
                            },
                        },
                    ],
                },
                "notes": {"type": "array", "items": {"type": "string"}},
                "unsafe_load": {
                    "description": "the unpickled checkpoint file and its SHA-256, else null",
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["file", "sha256"],
                            "properties": {
                                "file": {"type": "string"},
                                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            },
                        },
                    ],
                },
            },
        },
        "metrics": {"$ref": "#/$defs/metrics"},
        "notes": {"$ref": "#/$defs/notes"},
        "findings": {"type": "array", "items": FINDING},
        "sections": {"type": "array", "items": SECTION},
        "training": {"type": ["object", "null"]},
        "artifacts": {"type": "object"},
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://auditclf.invalid/schema/report-v{SCHEMA_VERSION}.json",
    "title": "auditclf report.json",
    "description": "What one `auditclf run` found: provenance, data, every audited model's "
    "flat metrics and findings, gates and limitations. NaN is never a number: an undefined "
    "metric is null with its reason in the model's notes.",
    "type": "object",
    "required": ["schema_version", "verdict", "run", "data", "models", "gates", "limitations"],
    "properties": {
        "schema_version": {"enum": list(READABLE_VERSIONS)},
        "verdict": {
            "enum": list(VERDICTS),
            "description": "what decides the exit code; with no gate set (gated false) it is "
            "pass, which the reports show as NO GATES SET",
        },
        "gated": {
            "type": "boolean",
            "description": "whether any gate (or baseline check) was set: a pass of an ungated "
            "run held nothing to a threshold",
        },
        "run": {
            "type": "object",
            "required": [
                "started_at",
                "seed",
                "device",
                "versions",
                "durations",
                "config",
                "data_hash",
                "model_hash",
            ],
            "properties": {
                "started_at": {"type": "string"},
                "seed": {"type": "integer", "minimum": 0},
                "device": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"type": "string"}},
                },
                "versions": {"type": "object", "additionalProperties": {"type": "string"}},
                "durations": {
                    "type": "object",
                    "description": "wall-clock seconds per phase",
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                "config": {
                    "type": "object",
                    "description": "the run's whole configuration (see `auditclf init`)",
                },
                "data_hash": {"type": "string"},
                "model_hash": {"type": "string"},
                "device_defaults": {
                    "type": "object",
                    "description": "the counts the config left null and the device set "
                    "(images attacked, explained, moved at a time), by config key",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
                "unsafe_load": {
                    "type": "boolean",
                    "description": "true when the checkpoint was unpickled (--trust-checkpoint)",
                },
                "distributed": {
                    "type": "object",
                    "description": "the processes the audit was spread over: torchrun's world "
                    "size and the backend that joined them (null in a single process); under "
                    "torchrun, rank 0's meetings with the others (gathers of the probes' rows, "
                    "shared outcomes) and the seconds spent in them",
                    "required": ["world_size", "backend"],
                    "properties": {
                        "world_size": {"type": "integer", "minimum": 1},
                        "backend": STRING_OR_NULL,
                        "meetings": {"type": "integer", "minimum": 0},
                        "meeting_seconds": {"type": "number", "minimum": 0},
                    },
                },
            },
        },
        "data": {
            "type": "object",
            "required": ["dataset", "classes", "input_shape", "split_counts", "hash"],
            "properties": {
                "dataset": {"type": "string"},
                "classes": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "input_shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 3,
                    "maxItems": 3,
                },
                "split_counts": {
                    "type": "object",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
                "class_distribution": {"type": "object"},
                "hash": {"type": "string"},
                "shift": {
                    "description": "the shift set audited beside the test split "
                    "(shift.dataset), when given; its metrics are the models' shift.<name>.*",
                    "type": "object",
                    "required": ["name", "source", "num_images", "hash"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
                        "source": {"type": "string"},
                        "num_images": {"type": "integer", "minimum": 1},
                        "hash": {"type": "string"},
                    },
                },
            },
        },
        "models": {
            "type": "object",
            "required": ["baseline"],
            "description": "baseline, and hardened / rebalanced when retrained",
            "additionalProperties": MODEL,
        },
        "gates": {"type": "array", "items": GATE},
        "limitations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["section", "reason"],
                "properties": {"section": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
        "artifacts": {
            "description": "the run's images and maps (attack gallery, explained images, "
            "attribution maps): float32 arrays in this npz file beside report.json, members "
            "<model>/<array>.npy; null when the run made none",
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["file", "sha256"],
                    "properties": {
                        "file": {"const": "artifacts.npz"},
                        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    },
                },
            ],
        },
    },
    "$defs": {
        "metrics": {
            "type": "object",
            "description": "flat metric keys (README: metric keys); null when undefined",
            "propertyNames": {"pattern": METRIC_KEY},
            "additionalProperties": NUMBER_OR_NULL,
        },
        "notes": {
            "type": "object",
            "description": "why a metric is null, by key",
            "additionalProperties": {"type": "string"},
        },
    },
}


def report_schema() -> dict[str, Any]:
    """A copy of the schema of report.json (callers may change it freely)."""
    return json.loads(json.dumps(REPORT_SCHEMA))


def schema_text() -> str:
    return json.dumps(REPORT_SCHEMA, indent=2, ensure_ascii=False) + "\n"


def validate_report(raw: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``raw`` does not follow the schema.

    Needs the ``jsonschema`` package (in the ``test`` extra), which auditclf
    itself does not depend on.
    """
    try:
        import jsonschema
    except ImportError:
        raise UsageError(
            "validating a report needs the jsonschema package (pip install jsonschema)"
        ) from None
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(raw)
