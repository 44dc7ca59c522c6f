"""GeoML's Processing provider and algorithms (batch, modeler, qgis_process)."""
