"""Training: typed functions with callbacks (LightGBM's engine.train style), no class trees."""
