"""Simulated photos of monitored objects: a renderer, virtual clients of the API, and a fast database fixture.

* :mod:`pzone_stack.photosim.render` — synthetic photos of a parked e-scooter at a known tilt (Pillow + numpy), made
  of :mod:`~pzone_stack.photosim.params` (every random choice of a photo), :mod:`~pzone_stack.photosim.scooter` (the
  scooter's 3D model and the camera's projection) and :mod:`~pzone_stack.photosim.scene` (the scene and the camera).
* :mod:`pzone_stack.photosim.client` — virtual clients: photograph a device at its true tilt, upload through the API.
* :mod:`pzone_stack.photosim.seed` — write a synthetic platform state straight into the database and object store
  (a fixture for tests and benchmarks, not a product path).

Nothing is imported here: each module pulls numpy/Pillow/httpx only when used.
"""
