"""ASGI 3 applications on the asyncio worker: HTTP, WebSocket, lifespan."""
