"""Training tasks, one module per task family: its data encoding, batches, loss and
evaluation, and the setup a recipe builds it with (``setup_*``).

``mlm`` (BERT pretraining), ``clm`` (GPT pretraining, next-token loss and metrics),
``classify`` (sequence classification), ``tag`` (sequence labelling), ``spelling`` (spelling
correction: detection + correction heads), ``instruct`` (instruction
tuning of a GPT), ``distill`` (a student learning a teacher) and ``bpr`` (matrix
factorisation of user-item interactions with the BPR loss).
"""
