"""The audit pages: every session's audit one click away in the Jupyter Server.

``/guard/`` lists the sessions of the audit folder, ``/guard/sessions/<id>`` shows one as its
audit notebook renders it (with downloads of the .ipynb, the .jsonl and the review bundle),
``/guard/api/sessions[/<id>]`` answers JSON.  All behind the server's authentication; nothing
outside the audit folder is served (:mod:`jupyter_ext.pages.store`).
"""

from jupyter_ext.pages.handlers import AUTH_RESOURCE, page_handlers
from jupyter_ext.pages.store import AuditStore, NotFound, Session

__all__ = ["AUTH_RESOURCE", "AuditStore", "NotFound", "Session", "page_handlers"]
