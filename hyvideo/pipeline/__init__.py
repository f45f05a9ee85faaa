"""The story: request -> text -> noise -> sigmas -> denoise -> decode."""
