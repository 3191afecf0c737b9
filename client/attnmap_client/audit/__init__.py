"""The attention audit: many requests, one summary.json and one report.html."""
