"""What runs inside a worker: the servers (one per listener) and the protocols they speak.

A user's socketserver handler class is served by :mod:`.stream` or :mod:`.datagram`;
a WSGI application by :mod:`.wsgi` over the sans-IO HTTP/1.1 layer in :mod:`.http`.
"""
