"""The models: each a config, `init_state`, and pure `train_step` / `eval_step`.

  autoencoder   dense, convolutional and denoising autoencoders
  vae           the variational autoencoder (ELBO, IWAE bound)
  gan           generator and discriminator nets, losses, the keyed update
  codec         the learned compression codec and its file format
  dec           Deep Embedded Clustering (DEC and IDEC steps)

Nothing here imports the training loop: callers compile and loop.
"""
