"""The checks of the course's exercises: one module per lesson, ``lNN_name.py``.

Each lesson's module holds that lesson's ``check_*`` functions and ``EXERCISES``
(the name a stub cell defines -> its check); ``common.py`` holds what they share
(the verdict, the comparison of a backward pass). A lesson imports its own:

    from checks.l04_batchnorm_relu_pooling import check_relu
    from checks.common import passed

``tinydense grade`` loads this package from the instructors' copy by its file
location (never through ``sys.path``).
"""
