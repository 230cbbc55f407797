"""render_pdf: the same HTML as an A4 PDF through WeasyPrint, with every fetch except data: URIs refused.

Why WeasyPrint: it prints HTML/CSS without a browser, honours @page rules (A4, page numbers, the summary alone on
page one) and is pure Python over pango. Why imported lazily: it is an optional extra with system libraries, and
`medtl` must import and render HTML on a machine without them. Why a refusing fetcher: the report is
self-contained by construction, and a renderer that went to the network (or the file system) for a stray URL could
leak or depend on something nobody reviewed.
"""

from __future__ import annotations

import logging
from typing import Any

from medtl.errors import ConfigError, MedTLError

INSTALL_HINT = (
    "install the PDF extra with `pip install 'medtl[pdf]'` and, on Debian/Ubuntu, its system libraries with "
    "`apt-get install libpango-1.0-0 libpangoft2-1.0-0`; or write the HTML report only (pdf=False)"
)


def _weasyprint() -> Any:
    try:
        import weasyprint
    except (ImportError, OSError) as error:  # OSError: the package is there but pango/cairo libraries are not
        raise ConfigError(
            f"the PDF renderer (WeasyPrint) is not usable here: {type(error).__name__}: {error}",
            where="report.pdf",
            fix=INSTALL_HINT,
        ) from None
    return weasyprint


def _refuse(url: str) -> Any:
    raise ValueError(f"the report may only embed data: URIs, refused {url[:60]!r}")


def _data_only_fetcher(weasyprint: Any) -> Any:
    """A fetcher for data: URIs only; WeasyPrint >= 67 takes a URLFetcher object, older versions a function."""
    urls = weasyprint.urls
    if hasattr(urls, "URLFetcher"):
        return urls.URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)

    def fetch(url: str) -> Any:  # pragma: no cover - only with WeasyPrint < 67
        return urls.default_url_fetcher(url) if url.startswith("data:") else _refuse(url)

    return fetch


def render_pdf(html: str) -> bytes:
    """PDF bytes for a report produced by render_html; a ConfigError says how to install WeasyPrint when missing."""
    weasyprint = _weasyprint()
    fatal = getattr(weasyprint.urls, "FatalURLFetchingError", None)
    # WeasyPrint logs each CSS property it does not support as a warning; the same CSS also targets browsers.
    logger = logging.getLogger("weasyprint")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        document = weasyprint.HTML(string=html, base_url=None, url_fetcher=_data_only_fetcher(weasyprint))
        return document.write_pdf()
    except BaseException as error:  # FatalURLFetchingError derives from BaseException so that nothing swallows it
        if fatal is None or not isinstance(error, fatal):
            raise
        raise MedTLError(
            "the report refers to a resource that is not embedded (only data: URIs are allowed)",
            where="report.pdf",
            fix="embed every image as a data: URI; a report must render without network or file access",
        ) from None
    finally:
        logger.setLevel(previous)
