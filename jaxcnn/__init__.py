"""jaxcnn: the classic CNNs (LeNet-5, AlexNet, VGG) and their training tricks in JAX/Flax."""
