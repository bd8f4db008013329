"""sam2s.serving: tracking over HTTP, for clients that cannot track in their own process (3D Slicer's
GUI Python has no worker threads) or that use a remote GPU.

Modules: ``server`` (the FastAPI tracking server, ``sam2s serve``) and its parts, the only modules
here that need FastAPI, pydantic or uvicorn: ``server_bodies`` (request bodies), ``server_state``
(uploads, jobs, sessions, limits, model cache), ``server_guard`` (token, protocol, body size),
``server_errors`` (JSON errors), ``server_setup`` (creating a session), ``server_frames``
(server-side frames), ``routes_info``, ``routes_uploads``, ``routes_sessions``, ``routes_jobs`` and
``routes_common`` (the endpoints); ``options`` (its command-line options and limits, standard
library only); ``client`` (its client: standard library and numpy), with ``remote`` (remote
sessions, runs and jobs) and ``client_errors`` (the client's errors); ``protocol`` (the binary
message format); ``access`` (the ``--allow-path`` rule and token files, also used by the web app).
Importing this package imports none of them.
"""
