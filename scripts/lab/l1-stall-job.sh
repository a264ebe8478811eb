# Run: scripts/kvm-lab.sh --stall 45 -- sh -c "$(cat scripts/lab/l1-stall-job.sh)"   (exits 126 with the dump)
# A lab job that makes L1 look stalled: it stops L1's heartbeat (init's background
# subshell: parent PID 1, cmdline /init) and stays quiet; the lab must end it as stalled.
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = 1 ] && continue
  [ "$(cut -d' ' -f4 "$p/stat" 2>/dev/null)" = 1 ] || continue
  grep -q init "$p/cmdline" 2>/dev/null && kill -STOP "$pid" && echo "l1-stall-job: stopped the heartbeat ($pid)"
done
sleep 600
