"""Use cases without Qt: segment photos, batch folders, manage weights, export results."""
