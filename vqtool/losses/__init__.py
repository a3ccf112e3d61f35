"""Training losses: reconstruction, adversarial (PatchGAN), perceptual (LPIPS-style)."""
