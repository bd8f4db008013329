"""sam2s.serving: tracking over HTTP, for clients that cannot track in their own process (3D Slicer's
GUI Python has no worker threads) or that use a remote GPU.

Modules: ``server`` (the FastAPI tracking server, ``sam2s serve``; the only module here that needs
FastAPI and uvicorn), ``options`` (its command-line options and limits, standard library only),
``client`` (its client: standard library and numpy), ``protocol`` (the binary message format),
``access`` (the ``--allow-path`` rule and token files, also used by the web app). Importing this
package imports none of them.
"""
