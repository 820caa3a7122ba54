"""Datasets and federated partitions (offline digits and fonts, image folders, CIFAR)."""

from prompts.data.federation import (DATASETS, ClientData, DomainDataset, Federation, build_federation,  # noqa: F401
                                     digits_dataset, digits_federation, fonts_federation,
                                     from_config)
from prompts.data.partition import (ClientSplit, dirichlet_counts, dirichlet_proportions,  # noqa: F401
                                    label_distribution, partition)
