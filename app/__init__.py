"""The HTTP layer: the FastAPI app, its middleware, routes and schemas (native, TEI and OpenAI
dialects), error mapping, OpenAPI and docs, and the playground page. A thin adapter over
`baihua.serving`, which knows no HTTP."""
