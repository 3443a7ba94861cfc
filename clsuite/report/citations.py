"""BibTeX entries for clsuite and for every dataset and method the report may name."""

from __future__ import annotations

CLSUITE = """@software{clsuite,
  title   = {clsuite: a continual-learning benchmark and metrics suite on a declarative DVC pipeline},
  version = {0.1.0},
  year    = {2026},
}"""

ENTRIES: dict[str, str] = {
    "lecun1998mnist": """@article{lecun1998mnist,
  title   = {Gradient-based learning applied to document recognition},
  author  = {LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal = {Proceedings of the IEEE},
  volume  = {86}, number = {11}, pages = {2278--2324}, year = {1998},
}""",
    "animalmnist": """@misc{animalmnist,
  title  = {Animal-MNIST: animal silhouette extension to MNIST},
  note   = {PyPI package animal-mnist, version 0.4},
  year   = {2026},
}""",
    "kirkpatrick2017ewc": """@article{kirkpatrick2017ewc,
  title   = {Overcoming catastrophic forgetting in neural networks},
  author  = {Kirkpatrick, James and Pascanu, Razvan and Rabinowitz, Neil and others},
  journal = {Proceedings of the National Academy of Sciences},
  volume  = {114}, number = {13}, pages = {3521--3526}, year = {2017},
}""",
    "chaudhry2019er": """@article{chaudhry2019er,
  title   = {On Tiny Episodic Memories in Continual Learning},
  author  = {Chaudhry, Arslan and Rohrbach, Marcus and Elhoseiny, Mohamed and Ajanthan, Thalaiyasingam
             and Dokania, Puneet K. and Torr, Philip H. S. and Ranzato, Marc'Aurelio},
  journal = {arXiv preprint arXiv:1902.10486}, year = {2019},
}""",
    "buzzega2020der": """@inproceedings{buzzega2020der,
  title     = {Dark Experience for General Continual Learning: a Strong, Simple Baseline},
  author    = {Buzzega, Pietro and Boschini, Matteo and Porrello, Angelo and Abati, Davide and Calderara, Simone},
  booktitle = {Advances in Neural Information Processing Systems}, year = {2020},
}""",
    "lomonaco2021avalanche": """@inproceedings{lomonaco2021avalanche,
  title     = {Avalanche: an End-to-End Library for Continual Learning},
  author    = {Lomonaco, Vincenzo and Pellegrini, Lorenzo and Cossu, Andrea and others},
  booktitle = {CVPR Workshops}, year = {2021},
}""",
    "chaudhry2018riemannian": """@inproceedings{chaudhry2018riemannian,
  title     = {Riemannian Walk for Incremental Learning: Understanding Forgetting and Intransigence},
  author    = {Chaudhry, Arslan and Dokania, Puneet K. and Ajanthan, Thalaiyasingam and Torr, Philip H. S.},
  booktitle = {ECCV}, year = {2018},
}""",
    "lopezpaz2017gem": """@inproceedings{lopezpaz2017gem,
  title     = {Gradient Episodic Memory for Continual Learning},
  author    = {Lopez-Paz, David and Ranzato, Marc'Aurelio},
  booktitle = {Advances in Neural Information Processing Systems}, year = {2017},
}""",
}

ENTRIES["li2017lwf"] = """@article{li2017lwf,
  title   = {Learning without Forgetting},
  author  = {Li, Zhizhong and Hoiem, Derek},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume  = {40}, number = {12}, pages = {2935--2947}, year = {2018},
}"""

ENTRIES["foret2021sam"] = """@inproceedings{foret2021sam,
  title     = {Sharpness-Aware Minimization for Efficiently Improving Generalization},
  author    = {Foret, Pierre and Kleiner, Ariel and Mobahi, Hossein and Neyshabur, Behnam},
  booktitle = {International Conference on Learning Representations}, year = {2021},
}"""
ENTRIES["li2024mgsersam"] = """@article{li2024mgsersam,
  title   = {MGSER-SAM: Memory-Guided Soft Experience Replay with Sharpness-Aware Optimization
             for Enhanced Continual Learning},
  author  = {Li, Xingyu and Tang, Bo and Li, Haifeng},
  journal = {arXiv preprint arXiv:2405.09492}, year = {2024},
}"""
ENTRIES["rebuffi2017icarl"] = """@inproceedings{rebuffi2017icarl,
  title     = {iCaRL: Incremental Classifier and Representation Learning},
  author    = {Rebuffi, Sylvestre-Alvise and Kolesnikov, Alexander and Sperl, Georg and Lampert, Christoph H.},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition},
  pages     = {2001--2010}, year = {2017},
}"""
ENTRIES["yan2021der"] = """@inproceedings{yan2021der,
  title     = {DER: Dynamically Expandable Representation for Class Incremental Learning},
  author    = {Yan, Shipeng and Xie, Jiangwei and He, Xuming},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  pages     = {3014--3023}, year = {2021},
}"""

# Always cited: the framework, the metric definitions used in every report.
ALWAYS = ("lomonaco2021avalanche", "chaudhry2018riemannian", "lopezpaz2017gem", "buzzega2020der")


def bibtex(keys: list[str]) -> str:
    """clsuite's entry plus the entries for ``keys`` (a full BibTeX entry passes through)."""
    out = [CLSUITE]
    seen = set()
    for key in [*ALWAYS, *keys]:
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(key if key.lstrip().startswith("@") else ENTRIES.get(key, f"% no BibTeX entry known for {key!r}"))
    return "\n\n".join(out)
