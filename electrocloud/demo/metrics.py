"""Read the services' Prometheus endpoints: the demo watches what operators would watch."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

#: sample name -> labels (as a sorted tuple of pairs) -> value
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(port: int, timeout_s: float = 2.0) -> Samples | None:
    """All samples at ``http://127.0.0.1:PORT/metrics``, or None when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = float(sample.value)
    return dict(samples)


def total(samples: Samples | None, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    if not samples or name not in samples:
        return 0.0
    wanted = set(labels.items())
    return sum(v for key, v in samples[name].items() if wanted <= set(key))


def by_label(samples: Samples | None, name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` for ``name``."""
    found: dict[str, float] = {}
    for key, value in (samples or {}).get(name, {}).items():
        labels = dict(key)
        if label in labels:
            found[labels[label]] = found.get(labels[label], 0.0) + value
    return found
