"""PDF rendering of an invoice: WeasyPrint prints the very HTML of ``render_html``.

So HTML and PDF cannot disagree. WeasyPrint needs Pango (Debian
``libpango-1.0-0 libpangoft2-1.0-0``) and a font (``fonts-dejavu-core``); it runs
headless. Rendering never touches the network or the file system: the page is
self-contained and any URL it might reference is refused. The output has no
creation date or random identifier, and the embedded font subsets get a fixed
"modified" time (fontTools reads ``SOURCE_DATE_EPOCH``), so the same HTML gives
the same PDF bytes with the same WeasyPrint, Pango and fonts (byte identity is
promised only for JSON and HTML).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billing.model import Invoice
from billing.render_html import invoice_html

#: Font-subset timestamp when the caller has not set SOURCE_DATE_EPOCH (2000-01-01 UTC).
FIXED_SOURCE_DATE_EPOCH = "946684800"
_ENV_LOCK = threading.Lock()


@contextmanager
def _fixed_font_timestamps() -> Iterator[None]:
    # fontTools stamps each subset font's head.modified with "now" unless
    # SOURCE_DATE_EPOCH is set; a caller's own value (reproducible builds) wins.
    with _ENV_LOCK:
        if "SOURCE_DATE_EPOCH" in os.environ:
            yield
            return
        os.environ["SOURCE_DATE_EPOCH"] = FIXED_SOURCE_DATE_EPOCH
        try:
            yield
        finally:
            os.environ.pop("SOURCE_DATE_EPOCH", None)


class PdfRenderError(RuntimeError):
    """WeasyPrint failed, or the page referenced an external resource."""


def html_to_pdf(html: str) -> bytes:
    """PDF bytes of a self-contained HTML page."""
    # Imported here: WeasyPrint loads Pango through cffi, which takes a moment and
    # needs the system libraries; JSON/HTML-only runs should not pay for it.
    # WeasyPrint logs every parsing and layout step at INFO (even on import); an
    # invoice run is not about that.
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    from weasyprint import HTML
    from weasyprint.urls import FatalURLFetchingError, URLFetcher

    class _NoFetch(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> Any:
            raise FatalURLFetchingError(f"invoice HTML must be self-contained, refused {url!r}")

    try:
        with _fixed_font_timestamps():
            pdf = HTML(string=html, url_fetcher=_NoFetch()).write_pdf()
    except FatalURLFetchingError as exc:
        raise PdfRenderError(str(exc)) from None
    if not isinstance(pdf, bytes):
        raise PdfRenderError("WeasyPrint returned no PDF")
    return pdf


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as PDF, printed from its HTML rendering."""
    return html_to_pdf(invoice_html(invoice))
