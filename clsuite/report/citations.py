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

# Datasets and the benchmark protocols built on them (clsuite.data.sources).
ENTRIES["xiao2017fashion"] = """@article{xiao2017fashion,
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  author  = {Xiao, Han and Rasul, Kashif and Vollgraf, Roland},
  journal = {arXiv preprint arXiv:1708.07747}, year = {2017},
}"""
ENTRIES["krizhevsky2009cifar"] = """@techreport{krizhevsky2009cifar,
  title       = {Learning Multiple Layers of Features from Tiny Images},
  author      = {Krizhevsky, Alex},
  institution = {University of Toronto}, year = {2009},
}"""
ENTRIES["le2015tinyimagenet"] = """@techreport{le2015tinyimagenet,
  title       = {Tiny ImageNet Visual Recognition Challenge},
  author      = {Le, Ya and Yang, Xuan},
  institution = {Stanford University, CS231N course report}, year = {2015},
}"""
ENTRIES["russakovsky2015imagenet"] = """@article{russakovsky2015imagenet,
  title   = {ImageNet Large Scale Visual Recognition Challenge},
  author  = {Russakovsky, Olga and Deng, Jia and Su, Hao and Krause, Jonathan and Satheesh, Sanjeev
             and Ma, Sean and Huang, Zhiheng and Karpathy, Andrej and Khosla, Aditya and Bernstein, Michael
             and Berg, Alexander C. and Fei-Fei, Li},
  journal = {International Journal of Computer Vision},
  volume  = {115}, number = {3}, pages = {211--252}, year = {2015},
}"""
ENTRIES["hou2019ucir"] = """@inproceedings{hou2019ucir,
  title     = {Learning a Unified Classifier Incrementally via Rebalancing},
  author    = {Hou, Saihui and Pan, Xinyu and Loy, Chen Change and Wang, Zilei and Lin, Dahua},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)}, year = {2019},
}"""
ENTRIES["douillard2020podnet"] = """@inproceedings{douillard2020podnet,
  title     = {PODNet: Pooled Outputs Distillation for Small-Tasks Incremental Learning},
  author    = {Douillard, Arthur and Cord, Matthieu and Ollion, Charles and Robert, Thomas and Valle, Eduardo},
  booktitle = {European Conference on Computer Vision (ECCV)}, year = {2020},
}"""
ENTRIES["yan2021der"] = """@inproceedings{yan2021der,
  title     = {DER: Dynamically Expandable Representation for Class Incremental Learning},
  author    = {Yan, Shipeng and Xie, Jiangwei and He, Xuming},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)}, year = {2021},
}"""
ENTRIES["lomonaco2017core50"] = """@inproceedings{lomonaco2017core50,
  title     = {CORe50: a New Dataset and Benchmark for Continuous Object Recognition},
  author    = {Lomonaco, Vincenzo and Maltoni, Davide},
  booktitle = {Proceedings of the 1st Annual Conference on Robot Learning (CoRL)},
  series    = {PMLR}, volume = {78}, pages = {17--26}, year = {2017},
}"""
ENTRIES["yang2023medmnist"] = """@article{yang2023medmnist,
  title   = {MedMNIST v2 -- A large-scale lightweight benchmark for 2D and 3D biomedical image classification},
  author  = {Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and Zhao, Lin and Ke, Bilian
             and Pfister, Hanspeter and Ni, Bingbing},
  journal = {Scientific Data}, volume = {10}, number = {1}, pages = {41}, year = {2023},
}"""
ENTRIES["liu2025braincl"] = """@article{liu2025braincl,
  title   = {Semi-parametric Memory Consolidation: Towards Brain-like Deep Continual Learning},
  author  = {Liu, Geng and Zhu, Fei and Feng, Rong and Yi, Zhiqiang and Wang, Shiqi and Meng, Gaofeng
             and Zhang, Zhaoxiang},
  journal = {arXiv preprint arXiv:2504.14727}, year = {2025},
}"""
ENTRIES["hendrycks2019imagenetc"] = """@inproceedings{hendrycks2019imagenetc,
  title     = {Benchmarking Neural Network Robustness to Common Corruptions and Perturbations},
  author    = {Hendrycks, Dan and Dietterich, Thomas},
  booktitle = {International Conference on Learning Representations (ICLR)}, year = {2019},
}"""
ENTRIES["hendrycks2021nae"] = """@inproceedings{hendrycks2021nae,
  title     = {Natural Adversarial Examples},
  author    = {Hendrycks, Dan and Zhao, Kevin and Basart, Steven and Steinhardt, Jacob and Song, Dawn},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)}, year = {2021},
}"""
ENTRIES["hendrycks2017msp"] = """@inproceedings{hendrycks2017msp,
  title     = {A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural Networks},
  author    = {Hendrycks, Dan and Gimpel, Kevin},
  booktitle = {International Conference on Learning Representations (ICLR)}, year = {2017},
}"""
ENTRIES["liu2020energy"] = """@inproceedings{liu2020energy,
  title     = {Energy-based Out-of-distribution Detection},
  author    = {Liu, Weitang and Wang, Xiaoyun and Owens, John D. and Li, Yixuan},
  booktitle = {Advances in Neural Information Processing Systems}, year = {2020},
}"""
ENTRIES["roy2007erank"] = """@inproceedings{roy2007erank,
  title     = {The effective rank: A measure of effective dimensionality},
  author    = {Roy, Olivier and Vetterli, Martin},
  booktitle = {European Signal Processing Conference (EUSIPCO)}, pages = {606--610}, year = {2007},
}"""
ENTRIES["vandermaaten2008tsne"] = """@article{vandermaaten2008tsne,
  title   = {Visualizing Data using t-SNE},
  author  = {van der Maaten, Laurens and Hinton, Geoffrey},
  journal = {Journal of Machine Learning Research}, volume = {9}, number = {86}, pages = {2579--2605}, year = {2008},
}"""
ENTRIES["zhou2023memo"] = """@inproceedings{zhou2023memo,
  title     = {A Model or 603 Exemplars: Towards Memory-Efficient Class-Incremental Learning},
  author    = {Zhou, Da-Wei and Wang, Qi-Wei and Ye, Han-Jia and Zhan, De-Chuan},
  booktitle = {International Conference on Learning Representations (ICLR)}, year = {2023},
}"""
#: metric papers cited when the report has the table their metrics come from (extended sections)
METRIC_CITATIONS = {"robustness": ("hendrycks2019imagenetc",), "ood_detection": ("hendrycks2017msp", "liu2020energy"),
                    "feature_spectrum": ("roy2007erank",), "tsne": ("vandermaaten2008tsne",),
                    "compute": ("zhou2023memo",)}
ENTRIES["braincl"] = """@misc{braincl,
  title = {Semi-parametric Memory Consolidation: Towards Brain-like Deep Continual Learning},
  note  = {arXiv preprint; clsuite implements the method as described in its issue \\#6},
  year  = {2025},
}"""

# Text corpora and generators of the LLM track (clsuite.data.text).
ENTRIES["zhang2015charcnn"] = """@inproceedings{zhang2015charcnn,
  title     = {Character-level Convolutional Networks for Text Classification},
  author    = {Zhang, Xiang and Zhao, Junbo and LeCun, Yann},
  booktitle = {Advances in Neural Information Processing Systems 28 (NIPS)},
  pages     = {649--657}, year = {2015},
}"""
ENTRIES["rajpurkar2016squad"] = """@inproceedings{rajpurkar2016squad,
  title     = {{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author    = {Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle = {Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  pages     = {2383--2392}, year = {2016},
}"""
ENTRIES["clark2019boolq"] = """@inproceedings{clark2019boolq,
  title     = {{BoolQ}: Exploring the Surprising Difficulty of Natural Yes/No Questions},
  author    = {Clark, Christopher and Lee, Kenton and Chang, Ming-Wei and Kwiatkowski, Tom and Collins, Michael
               and Toutanova, Kristina},
  booktitle = {Proceedings of NAACL-HLT}, year = {2019},
}"""
ENTRIES["welbl2017sciq"] = """@inproceedings{welbl2017sciq,
  title     = {Crowdsourcing Multiple Choice Science Questions},
  author    = {Welbl, Johannes and Liu, Nelson F. and Gardner, Matt},
  booktitle = {Proceedings of the 3rd Workshop on Noisy User-generated Text (W-NUT)}, year = {2017},
}"""
ENTRIES["clark2018arc"] = """@article{clark2018arc,
  title   = {Think you have Solved Question Answering? Try {ARC}, the {AI2} Reasoning Challenge},
  author  = {Clark, Peter and Cowhey, Isaac and Etzioni, Oren and Khot, Tushar and Sabharwal, Ashish
             and Schoenick, Carissa and Tafjord, Oyvind},
  journal = {arXiv preprint arXiv:1803.05457}, year = {2018},
}"""
ENTRIES["cobbe2021gsm8k"] = """@article{cobbe2021gsm8k,
  title   = {Training Verifiers to Solve Math Word Problems},
  author  = {Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and Jun, Heewoo
             and Kaiser, Lukasz and Plappert, Matthias and Tworek, Jerry and Hilton, Jacob and Nakano, Reiichiro
             and Hesse, Christopher and Schulman, John},
  journal = {arXiv preprint arXiv:2110.14168}, year = {2021},
}"""
ENTRIES["hendrycks2021math"] = """@inproceedings{hendrycks2021math,
  title     = {Measuring Mathematical Problem Solving With the {MATH} Dataset},
  author    = {Hendrycks, Dan and Burns, Collin and Kadavath, Saurav and Arora, Akul and Basart, Steven
               and Tang, Eric and Song, Dawn and Steinhardt, Jacob},
  booktitle = {NeurIPS Datasets and Benchmarks Track}, year = {2021},
}"""
ENTRIES["peng2023gpt4llm"] = """@article{peng2023gpt4llm,
  title   = {Instruction Tuning with {GPT-4}},
  author  = {Peng, Baolin and Li, Chunyuan and He, Pengcheng and Galley, Michel and Gao, Jianfeng},
  journal = {arXiv preprint arXiv:2304.03277}, year = {2023},
}"""
ENTRIES["stojanovski2025reasoninggym"] = """@article{stojanovski2025reasoninggym,
  title   = {{REASONING GYM}: Reasoning Environments for Reinforcement Learning with Verifiable Rewards},
  author  = {Stojanovski, Zafir and Stanley, Oliver and Sharratt, Joe and Jones, Richard and Adefioye, Abdulhakeem
             and Kaddour, Jean and K{\\"o}pf, Andreas},
  journal = {arXiv preprint arXiv:2505.24760}, year = {2025},
}"""
ENTRIES["miller1995wordnet"] = """@article{miller1995wordnet,
  title   = {{WordNet}: A Lexical Database for {English}},
  author  = {Miller, George A.},
  journal = {Communications of the ACM},
  volume  = {38}, number = {11}, pages = {39--41}, year = {1995},
}"""
ENTRIES["ciaramita2003supersense"] = """@inproceedings{ciaramita2003supersense,
  title     = {Supersense Tagging of Unknown Nouns in {WordNet}},
  author    = {Ciaramita, Massimiliano and Johnson, Mark},
  booktitle = {Proceedings of the 2003 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  pages     = {168--175}, year = {2003},
}"""

from clsuite.report.citations_zoo import ZOO_ENTRIES  # noqa: E402  (Avalanche's wrapped methods)

ENTRIES.update(ZOO_ENTRIES)

# Always cited: the framework, the metric definitions used in every report.
ALWAYS = ("lomonaco2021avalanche", "chaudhry2018riemannian", "lopezpaz2017gem", "buzzega2020der")


def bibtex(keys: list[str]) -> str:
    """clsuite's entry plus the entries for ``keys`` (comma-separated keys are split; a full
    BibTeX entry passes through)."""
    out = [CLSUITE]
    seen = set()
    # a key string may name several entries, comma-separated (e.g. a dataset and its protocol papers)
    split = [k for key in keys for k in ([key] if key.lstrip().startswith("@") else key.split(","))]
    for key in [*ALWAYS, *(k.strip() for k in split)]:
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(key if key.lstrip().startswith("@") else ENTRIES.get(key, f"% no BibTeX entry known for {key!r}"))
    return "\n\n".join(out)
