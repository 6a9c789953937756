"""jaxcnn: DeepLearnToolbox's classic CNN (`test_example_CNN.m`) as exact, compiled JAX.

Public API:
  init_net(key, layers, input_shape, n_classes) -> Net
  predict(net, images) -> (N, classes) outputs
  loss_and_grad(net, images, targets) -> (L, grads)      (autodiff of the reference model)
  train_epoch(net, images, targets, order, alpha=1.0, batchsize=50) -> (net, losses)
  evaluate(net, images, labels) -> Evaluation(error_rate, bad, predictions, confusion)
"""
from .layers import EXAMPLE_LAYERS, Conv, Input, Pool, parse_layers
from .model import loss_and_grad
from .net import Net, count_params, init_net
from .optimizers import make_optimizer
from .train import Evaluation, evaluate, predict, smoothed_loss, train_epoch

__version__ = "0.1.0"

__all__ = ["EXAMPLE_LAYERS", "Conv", "Input", "Pool", "parse_layers", "Net", "count_params", "init_net",
           "loss_and_grad", "predict", "Evaluation", "evaluate", "make_optimizer", "smoothed_loss",
           "train_epoch", "__version__"]
