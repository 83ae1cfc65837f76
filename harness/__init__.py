"""Dev-only test and benchmark drivers: an advisor (matrix-nio) and a visitor (the portal)."""
