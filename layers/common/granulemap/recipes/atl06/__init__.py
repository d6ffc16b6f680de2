"""The pieces of the ``atl06-cell-stats`` recipe, one step each.

``granule``    read ATL06 land-ice segments with h5coro (filters: quality, fill values, positions)
``cells``      HEALPix nested cell ids with mortie (authalic latitude on WGS84)
``footprints`` which parent cells a granule touches (CMR polygons or the file's positions); file-name times
``stats``      per-cell statistics, vectorised
``store``      the Zarr v3 store in S3: template, one region per parent cell, consolidation
``plot``       the PNG map
"""
