"""Policy files and the typed models that load them."""
