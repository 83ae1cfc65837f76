"""Everything the visitor touches: the portal page, its JSON API and its websocket."""
