"""Vision-language models: images from requests (`images`, no mlx) and their encoding into
the prompt (`model`, mlx-vlm's classes) for the architectures wired here (Gemma 3)."""
