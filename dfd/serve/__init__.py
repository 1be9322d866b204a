"""`python -m dfd.serve --model=RUN_OR_EXPORT_DIR`: a local web page and JSON API that score a file.

batcher   one thread owns the model; uploads that arrive together are scored as one batch
app       the Starlette application: GET / (the page), POST /v1/predict, GET /v1/model, GET /healthz
page      the page itself: one HTML document with inline CSS and JavaScript, nothing fetched from elsewhere
guard     Host and Origin checks (other sites' pages: DNS rebinding, cross-site uploads), security headers
uploads   the private upload folder, and removing those of killed servers at start

Starlette + uvicorn: a small, well-kept ASGI framework (the base FastAPI is built on) with no model or
validation layer we would not use; async request handling lets many uploads stream in at once while one
thread scores them, and its multipart parser (python-multipart) streams files instead of holding them.
"""
