#!/bin/busybox sh
# /init of the xtask guest image (embedded by xtask/src/image.rs).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# console=hvc0 (a virtio console): the kernel found no console to open for
# /init, so the driver comes first and the console is opened once hvc0 is
# there. What the kernel logged before hvc0 had its device went nowhere
# (hvc's console registers early, with nothing to write to): it is replayed
# from the kernel's log.
case " $(/bin/busybox cat /proc/cmdline) " in
*" console=hvc0 "*)
	/bin/busybox modprobe virtio_pci
	/bin/busybox modprobe virtio_console
	i=0
	while [ ! -e /sys/class/tty/hvc0 ] && [ $i -lt 50 ]; do
		/bin/busybox sleep 0.1
		i=$((i + 1))
	done
	exec </dev/console >/dev/console 2>&1
	# As the console would have shown it: with quiet, errors only
	# (console loglevel 4: levels 0-3).
	case " $(/bin/busybox cat /proc/cmdline) " in
	*" quiet "*) /bin/busybox dmesg -r | /bin/busybox sed -n 's/^<[0-3]>//p' ;;
	*) /bin/busybox dmesg ;;
	esac
	;;
esac
echo XTASK-INIT-START
/bin/busybox --install -s
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin
export LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu HOME=/root TERM=vt100
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
hostname guest
for m in $(cat /etc/xtask-modules); do
	modprobe "$m" || echo "xtask-init: modprobe $m failed"
done
ifconfig lo 127.0.0.1 up 2>/dev/null

# The first Ethernet interface (ARPHRD_ETHER) gets QEMU user networking's
# guest address and gateway, which the test peer uses too. The link is waited
# for (at most 5 s) so that a command's first packet is not lost.
for d in /sys/class/net/*; do
	n="${d##*/}"
	[ "$n" != lo ] && [ "$(cat "$d/type" 2>/dev/null)" = 1 ] || continue
	ip link set "$n" up
	ip addr add 10.0.2.15/24 dev "$n"
	i=0
	while [ "$(cat "$d/carrier" 2>/dev/null)" != 1 ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	ip route add default via 10.0.2.2 dev "$n"
	if [ $i -lt 50 ]; then
		echo "xtask-init: $n 10.0.2.15/24 via 10.0.2.2, link up after $((i * 100)) ms"
	else
		echo "xtask-init: $n 10.0.2.15/24 via 10.0.2.2, no link after 5 s"
	fi
	break
done

# The disks: each virtio block device with its size and PCI address.
for b in /sys/block/vd*; do
	[ -e "$b" ] || continue
	n="${b##*/}"
	s=$(cat "$b/size")
	pci=$(basename "$(readlink -f "$b/device/..")")
	echo "xtask-init: /dev/$n virtio-blk, $((s / 2048)) MiB ($s sectors), PCI $pci"
done

xtask_exec=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	xtask.exec=*) xtask_exec="${arg#xtask.exec=}" ;;
	esac
done

if [ -n "$xtask_exec" ]; then
	cmd="$(echo "$xtask_exec" | base64 -d)"
	(cd /root && sh -c "$cmd" </dev/null)
	echo "XTASK-EXIT-STATUS=$?"
else
	echo "xtask-init: interactive shell; exit it to power off"
	cd /root
	setsid cttyhack sh -l
fi
sync
poweroff -f
