"""The GAN architectures ``geoml:traingan`` offers, with their labels in the dialog and Processing
(one list for both, so the shell's dialog does not import Processing)."""

ARCH_LABELS = [
    ("auto", "Automatic (dcgan_sn without TARGET, pix2pix with TARGET)"),
    ("dcgan_sn", "dcgan_sn — tile generator, hinge loss, spectral-norm critic"),
    ("wgan_gp", "wgan_gp — tile generator, Wasserstein loss with gradient penalty"),
    ("pix2pix", "pix2pix — U-Net + PatchGAN, L1 × 100 (needs TARGET)"),
    ("unet_l1", "unet_l1 — U-Net with L1 only, no adversary (needs TARGET)"),
]
