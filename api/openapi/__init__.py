"""The API's OpenAPI 3.1 document, generated from the marshmallow schemas the routes use, served
at `/openapi.json` with a human-readable page at `/docs` (`api.docs_page`).

- `operations`: what the document says about each route and method;
- `envelopes` and `components`: the named schemas, headers and responses, the converter's
  formats for the API's field types, and the refinements marshmallow cannot express;
- `document`: the document built from the app's URL map, so a route cannot be left out (one
  without an entry in `operations` is marked `x-undocumented`, and a test fails on that mark);
- `serving`: `/openapi.json`, built on the first request that asks for it and kept on the app.
"""

from api.openapi.document import build_spec
from api.openapi.serving import register

__all__ = ["build_spec", "register"]
