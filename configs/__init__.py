"""The packaged configs (`jaxcnn configs` lists them; `jaxcnn train NAME` runs one)."""
