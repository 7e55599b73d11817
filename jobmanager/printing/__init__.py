"""Printing documents to PDF: reading any encoding, laying out with WeasyPrint, joining and endorsing.

``render_document`` prints one file (the ``print_to_pdf`` job's task); ``merge`` builds the
job's merged PDF with its cover page and optional endorsements (its finishing step).
"""

from jobmanager.printing.documents import SUPPORTED, Rendered, render_document
from jobmanager.printing.read import RenderError

__all__ = ["SUPPORTED", "Rendered", "RenderError", "render_document"]
