"""Figures. Every function returns a matplotlib `Figure` (made without pyplot: no backend, no
global state, nothing to close) that a notebook shows as it is and a program saves with
`fig.savefig`; only `plot_curves` writes a file.

- `curves`: a run's loss and accuracy curves, from its metric rows;
- `images`: image grids, first-layer filters, feature maps, a confusion matrix;
- `sweeps`: an ablation sweep's configurations compared.
"""
from jaxcnn.plot.curves import curves_figure, plot_curves
from jaxcnn.plot.images import confusion_figure, feature_maps_figure, filters_figure, image_grid
from jaxcnn.plot.sweeps import cost_accuracy_figure, sweep_figure

__all__ = ["confusion_figure", "cost_accuracy_figure", "curves_figure", "feature_maps_figure",
           "filters_figure", "image_grid", "plot_curves", "sweep_figure"]
