#!/usr/bin/env bash
# GPU-budget jobs on the pcam slice: baselines, a ResNet with the modern recipe, a `modern` search, and the
# selection question (does validation rank trials like the public test does?) for the seed vs the grouped split.
H="$1"; D="$2"; R="$3"; S=${SCALE:-1}
C="--data $D --results $R --no-progress ${EXTRA:-}"
stamp() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
T0=$(date +%s)
stamp baselines;  timeout $((70*S)) $H run baselines $C --epochs ${E_BASE:-3}
stamp resnet;     timeout $((60*S)) $H run resnet $C --epochs ${E_RES:-12} --lr-schedule cosine --warmup-epochs 1 \
                      --weight-decay 0.0001 --ema --dihedral --hed 0.05 --saturation 0.1
stamp modern;     timeout $((150*S)) $H search $C --space modern --study modern-gpu --trials 40 --epochs ${E_SEARCH:-4} --timeout ${T_SEARCH:-2.5}
stamp sel-seed;   timeout $((70*S)) $H search $C --space widen --study sel-seed --trials 30 --epochs 2 --timeout ${T_SEL:-1.1}
stamp sel-grouped; timeout $((70*S)) $H search $C --space widen --study sel-grouped --protocol grouped ${GEXTRA:-} --trials 30 --epochs 2 --timeout ${T_SEL:-1.1}
for st in modern-gpu sel-seed sel-grouped; do
  $H leaderboard --data $D --results $R --study $st --all --holdout $D/test_labels.csv --by val_auc --format csv --no-submission \
     > "$OUT/lb-$st.csv" 2> "$OUT/lb-$st.err"; tail -3 "$OUT/lb-$st.err"
done
stamp jobs-done
