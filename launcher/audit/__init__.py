"""``python -m launcher audit``: what each method leaks, measured the way the privacy community measures it.

Two threat models, reported separately (SPEC §7):

* **release** - the victim's final personalised prompt is published: membership inference on
  its training data (:mod:`.mia`, shadows from :mod:`.shadows`);
* **training view** - what an honest-but-curious server, aggregator, party or cluster co-member
  observes during training: its best reconstruction of the victim's private prompt
  (:mod:`.steal`), membership inference against that reconstruction, the MPC transcript
  (:mod:`.transcript`) and the cluster-size attack (:mod:`.transcript`).

Runs are read, never retrained (:mod:`.sources`); :mod:`.report` writes results.json, audit.md
and the plots; :mod:`.command` is the CLI.
"""
