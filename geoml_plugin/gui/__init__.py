"""GeoML dialogs and map tools (main thread only)."""
