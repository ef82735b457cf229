"""The serving engine: settings, the components it wires (model, transform, store), the
micro-batcher, the document index and the long-lived service with its metrics sink. Plain Python
that the HTTP layer and the CLI call; it never imports fastapi, starlette or typer."""
