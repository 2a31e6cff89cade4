// SPDX-License-Identifier: GPL-2.0
/*
 * virtio-test driver for the virtio-ts "virtio-test" device (device ID 45).
 *
 * The tutorial's driver, corrected.  Each byte N written to /dev/virtio_misc
 * becomes one request chain on the only virtqueue:
 *
 *   [driver-readable  struct virtio_test_request  {N, N+1, N+2, N+3, text}]
 *   [device-writable  struct virtio_test_response {ret, arg1, arg2}       ]
 *
 * The completion callback prints the response (the tutorial's exact lines)
 * and queues it for read() on the file that wrote the request.
 *
 * Spec references are to "Virtual I/O Device (VIRTIO) Version 1.2".
 *
 * Locking: vt_dev.lock (IRQ-safe, the callback runs in interrupt context)
 * protects the virtqueue, the in-flight list, every file's completion list
 * and pending count, and the removed/broken flags.  Object lifetime: the
 * vt_dev is refcounted by the probe and by every open file, so a file that
 * outlives remove() still has valid state to report -ENODEV from.
 */
#include <linux/idr.h>
#include <linux/kernel.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/virtio_test.h>

#define VT_MISC_NAME	"virtio_misc"

struct vt_file;

/* One request in flight or completed: both halves of the chain, kmalloc'ed. */
struct vt_req {
	struct virtio_test_request req;		/* device-readable */
	struct virtio_test_response resp;	/* device-writable */
	struct list_head node;		/* vt_dev.inflight, then vt_file.done */
	struct vt_file *owner;		/* NULL once the writer has closed */
};

struct vt_dev {
	struct virtio_device *vdev;
	struct virtqueue *vq;		/* NULL once removed */
	spinlock_t lock;
	struct list_head inflight;	/* vt_req handed to the device */
	struct list_head files;		/* open vt_file */
	wait_queue_head_t space_wq;	/* writers waiting for ring space */
	bool removed;
	bool broken;			/* we saw the device misbehave */
	struct work_struct break_work;
	struct virtio_test_config cfg;	/* as read at probe (CPU order) */
	struct miscdevice misc;
	char name[24];
	int id;
	struct kref ref;
};

/* Per open file: the responses to the requests this file wrote. */
struct vt_file {
	struct vt_dev *vt;
	struct list_head node;		/* vt_dev.files */
	struct list_head done;		/* completed vt_req, oldest first */
	unsigned int pending;		/* written, not yet completed */
	wait_queue_head_t wq;		/* readers and pollers */
};

static DEFINE_IDA(vt_ida);

static void vt_free(struct kref *ref)
{
	kfree(container_of(ref, struct vt_dev, ref));
}

/* Under vt->lock: 0 if the device can be used, else the error to return. */
static int vt_state(struct vt_dev *vt)
{
	if (vt->removed || !vt->vq)
		return -ENODEV;
	if (vt->broken || virtqueue_is_broken(vt->vq))
		return -EIO;
	return 0;
}

/* Under vt->lock: let every sleeper re-check its condition. */
static void vt_wake_all(struct vt_dev *vt)
{
	struct vt_file *f;

	wake_up_interruptible_all(&vt->space_wq);
	list_for_each_entry(f, &vt->files, node)
		wake_up_interruptible_all(&f->wq);
}

/*
 * virtio_break_device() takes a lock that is not IRQ-safe, so the callback
 * only sets vt->broken (which already fails all users) and defers this.
 */
static void vt_break_work(struct work_struct *work)
{
	struct vt_dev *vt = container_of(work, struct vt_dev, break_work);

	virtio_break_device(vt->vdev);
}

/* Under vt->lock: unlink @r from the in-flight list if it is there. */
static bool vt_take_inflight(struct vt_dev *vt, struct vt_req *r)
{
	struct vt_req *it;

	list_for_each_entry(it, &vt->inflight, node) {
		if (it == r) {
			list_del(&r->node);
			return true;
		}
	}
	return false;
}

/* Under vt->lock: a request left the device; give it to its writer. */
static void vt_complete(struct vt_req *r)
{
	struct vt_file *f = r->owner;

	if (!f) {
		kfree(r);	/* the writer closed its file meanwhile */
		return;
	}
	f->pending--;
	list_add_tail(&r->node, &f->done);
	wake_up_interruptible(&f->wq);
}

/*
 * Virtqueue callback, in interrupt context.  The disable_cb / get_buf /
 * enable_cb loop closes the race described in spec 2.7.14 ("Receiving Used
 * Buffers From The Device"): a buffer used after the last get_buf but before
 * notifications are re-enabled is picked up by the next iteration.
 */
static void test_request_done(struct virtqueue *vq)
{
	struct vt_dev *vt = vq->vdev->priv;
	struct vt_req *r;
	unsigned long flags;
	unsigned int len;

	printk(KERN_INFO "virtio test_request_done get ack\n");

	spin_lock_irqsave(&vt->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((r = virtqueue_get_buf(vq, &len)) != NULL) {
			if (!vt_take_inflight(vt, r)) {
				dev_err(&vt->vdev->dev,
					"device returned a buffer that is not in flight; device marked broken\n");
				goto broken;
			}
			/*
			 * Spec 2.7.8.2: the driver must not trust device-written
			 * data beyond the used length; a short response is a
			 * device bug, not something to paper over.
			 */
			if (len < sizeof(r->resp)) {
				dev_err(&vt->vdev->dev,
					"device wrote %u response bytes, expected %zu; device marked broken\n",
					len, sizeof(r->resp));
				if (r->owner)
					r->owner->pending--;
				kfree(r);
				goto broken;
			}
			printk(KERN_INFO "virtio response ret is %u\n",
			       le32_to_cpu(r->resp.ret));
			printk(KERN_INFO "virtio response arg1 is %u\n",
			       le32_to_cpu(r->resp.arg1));
			printk(KERN_INFO "virtio response arg2 is %u\n",
			       le32_to_cpu(r->resp.arg2));
			vt_complete(r);
		}
		if (unlikely(virtqueue_is_broken(vq)))
			break;
	} while (!virtqueue_enable_cb(vq));
	/* Descriptors were freed: writers waiting for ring space may go on. */
	wake_up_interruptible_all(&vt->space_wq);
	spin_unlock_irqrestore(&vt->lock, flags);
	return;

broken:
	vt->broken = true;
	schedule_work(&vt->break_work);
	vt_wake_all(vt);
	spin_unlock_irqrestore(&vt->lock, flags);
}

static void vt_build_request(struct virtio_test_request *req, u8 n)
{
	u32 v = n;	/* arithmetic in u32: 255 gives arg1 = 256 */

	req->type = cpu_to_le32(v);
	req->arg1 = cpu_to_le32(v + 1);
	req->arg2 = cpu_to_le32(v + 2);
	req->arg3 = cpu_to_le32(v + 3);
	strscpy_pad(req->arg4, VIRTIO_TEST_GREETING, sizeof(req->arg4));
}

static int vt_open(struct inode *inode, struct file *filp)
{
	/* misc_open() set private_data and holds misc_mtx while we run. */
	struct vt_dev *vt = container_of(filp->private_data, struct vt_dev,
					 misc);
	struct vt_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	f->vt = vt;
	INIT_LIST_HEAD(&f->done);
	init_waitqueue_head(&f->wq);

	spin_lock_irq(&vt->lock);
	if (vt->removed) {
		spin_unlock_irq(&vt->lock);
		kfree(f);
		return -ENODEV;
	}
	list_add_tail(&f->node, &vt->files);
	kref_get(&vt->ref);
	spin_unlock_irq(&vt->lock);

	filp->private_data = f;
	return stream_open(inode, filp);
}

static int vt_release(struct inode *inode, struct file *filp)
{
	struct vt_file *f = filp->private_data;
	struct vt_dev *vt = f->vt;
	struct vt_req *r, *tmp;
	LIST_HEAD(done);

	spin_lock_irq(&vt->lock);
	/* Requests still at the device are freed by the callback / remove. */
	list_for_each_entry(r, &vt->inflight, node)
		if (r->owner == f)
			r->owner = NULL;
	list_splice_init(&f->done, &done);
	list_del(&f->node);
	spin_unlock_irq(&vt->lock);

	list_for_each_entry_safe(r, tmp, &done, node)
		kfree(r);
	kfree(f);
	kref_put(&vt->ref, vt_free);
	return 0;
}

static bool vt_writable(struct vt_dev *vt)
{
	bool ret;

	spin_lock_irq(&vt->lock);
	/* Each request takes two descriptors (spec 2.7.13). */
	ret = vt_state(vt) || vt->vq->num_free >= 2;
	spin_unlock_irq(&vt->lock);
	return ret;
}

static ssize_t vt_write(struct file *filp, const char __user *buf,
			size_t count, loff_t *ppos)
{
	struct vt_file *f = filp->private_data;
	struct vt_dev *vt = f->vt;
	struct scatterlist out_sg, in_sg, *sgs[2];
	struct vt_req *r;
	u8 n;
	int err;

	if (count != 1)
		return -EINVAL;
	if (copy_from_user(&n, buf, 1))
		return -EFAULT;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->owner = f;
	vt_build_request(&r->req, n);

	/* Spec 2.7.13: readable descriptors first, then writable ones. */
	sg_init_one(&out_sg, &r->req, sizeof(r->req));
	sg_init_one(&in_sg, &r->resp, sizeof(r->resp));
	sgs[0] = &out_sg;
	sgs[1] = &in_sg;

	for (;;) {
		spin_lock_irq(&vt->lock);
		err = vt_state(vt);
		if (!err)
			err = virtqueue_add_sgs(vt->vq, sgs, 1, 1, r,
						GFP_ATOMIC);
		if (!err) {
			list_add_tail(&r->node, &vt->inflight);
			f->pending++;
			/* Spec 2.7.13.4: notify the device (unless suppressed). */
			virtqueue_kick(vt->vq);
			spin_unlock_irq(&vt->lock);
			return 1;
		}
		spin_unlock_irq(&vt->lock);

		if (err != -ENOSPC)
			break;
		/* Ring full: wait for the callback to free descriptors. */
		if (filp->f_flags & O_NONBLOCK) {
			err = -EAGAIN;
			break;
		}
		err = wait_event_interruptible(vt->space_wq, vt_writable(vt));
		if (err)
			break;
	}
	kfree(r);
	return err;
}

/* 1: a response is queued, 0: wait, <0: error to return. */
static int vt_read_ready(struct vt_file *f, bool *eof)
{
	struct vt_dev *vt = f->vt;
	int ret;

	spin_lock_irq(&vt->lock);
	if (!list_empty(&f->done)) {
		ret = 1;
	} else {
		ret = vt_state(vt);
		/* Nothing written and unanswered: there is nothing to wait for. */
		if (!ret && !f->pending) {
			*eof = true;
			ret = 1;
		}
	}
	spin_unlock_irq(&vt->lock);
	return ret;
}

static ssize_t vt_read(struct file *filp, char __user *buf, size_t count,
		       loff_t *ppos)
{
	struct vt_file *f = filp->private_data;
	struct vt_dev *vt = f->vt;
	struct vt_req *r;
	bool eof = false;
	int err;

	if (count < sizeof(r->resp))
		return -EINVAL;

	for (;;) {
		spin_lock_irq(&vt->lock);
		r = list_first_entry_or_null(&f->done, struct vt_req, node);
		if (r)
			list_del(&r->node);
		spin_unlock_irq(&vt->lock);
		if (r)
			break;

		eof = false;
		err = vt_read_ready(f, &eof);
		if (err < 0)
			return err;
		if (eof)
			return 0;
		if (err == 0) {
			if (filp->f_flags & O_NONBLOCK)
				return -EAGAIN;
			err = wait_event_interruptible(f->wq,
					vt_read_ready(f, &eof) != 0);
			/* loop: the state is re-read under the lock above */
			if (err)
				return err;
		}
	}

	/* The response is already little-endian, as the ABI says. */
	if (copy_to_user(buf, &r->resp, sizeof(r->resp))) {
		spin_lock_irq(&vt->lock);
		list_add(&r->node, &f->done);	/* keep it for a retry */
		spin_unlock_irq(&vt->lock);
		return -EFAULT;
	}
	kfree(r);
	return sizeof(struct virtio_test_response);
}

static __poll_t vt_poll(struct file *filp, poll_table *wait)
{
	struct vt_file *f = filp->private_data;
	struct vt_dev *vt = f->vt;
	__poll_t mask = 0;

	poll_wait(filp, &f->wq, wait);
	poll_wait(filp, &vt->space_wq, wait);

	spin_lock_irq(&vt->lock);
	if (!list_empty(&f->done))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (vt_state(vt))
		mask |= EPOLLERR | EPOLLHUP;
	else if (vt->vq->num_free >= 2)
		mask |= EPOLLOUT | EPOLLWRNORM;
	spin_unlock_irq(&vt->lock);
	return mask;
}

static const struct file_operations vt_fops = {
	.owner = THIS_MODULE,
	.open = vt_open,
	.release = vt_release,
	.read = vt_read,
	.write = vt_write,
	.poll = vt_poll,
	.llseek = no_llseek,
};

/*
 * Spec 3.1.1 step 4/5: the driver checks the offered features; the core has
 * already intersected them with our feature table when this runs, and a
 * failure here makes the core set FAILED instead of FEATURES_OK.
 */
static int vt_validate(struct virtio_device *vdev)
{
	/* Spec 6.1: a driver may refuse a device without VIRTIO_F_VERSION_1. */
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vdev->dev,
			"device does not offer VIRTIO_F_VERSION_1; legacy devices are not supported\n");
		return -ENODEV;
	}
	if (!virtio_has_feature(vdev, VIRTIO_TEST_F_CAN_PRINT)) {
		dev_err(&vdev->dev,
			"device does not offer VIRTIO_TEST_F_CAN_PRINT; not binding\n");
		return -ENODEV;
	}
	if (!vdev->config->get) {
		dev_err(&vdev->dev, "transport cannot read config space\n");
		return -EINVAL;
	}
	return 0;
}

static int vt_probe(struct virtio_device *vdev)
{
	struct vt_dev *vt;
	struct virtqueue *vq;
	int err;

	vt = kzalloc(sizeof(*vt), GFP_KERNEL);
	if (!vt)
		return -ENOMEM;
	vt->vdev = vdev;
	spin_lock_init(&vt->lock);
	INIT_LIST_HEAD(&vt->inflight);
	INIT_LIST_HEAD(&vt->files);
	init_waitqueue_head(&vt->space_wq);
	INIT_WORK(&vt->break_work, vt_break_work);
	kref_init(&vt->ref);
	vdev->priv = vt;

	vt->id = ida_alloc(&vt_ida, GFP_KERNEL);
	if (vt->id < 0) {
		err = vt->id;
		goto err_free;
	}
	if (vt->id == 0)
		strscpy(vt->name, VT_MISC_NAME, sizeof(vt->name));
	else
		snprintf(vt->name, sizeof(vt->name), VT_MISC_NAME "%d",
			 vt->id);

	/* Spec 2.5 / 4.x: config space fields are little-endian. Unused. */
	virtio_cread_le(vdev, struct virtio_test_config, num_pages,
			&vt->cfg.num_pages);
	virtio_cread_le(vdev, struct virtio_test_config, actual,
			&vt->cfg.actual);
	virtio_cread_le(vdev, struct virtio_test_config, event,
			&vt->cfg.event);

	/* Spec 3.1.1 step 7: set up the virtqueue(s). */
	vq = virtio_find_single_vq(vdev, test_request_done,
				   VIRTIO_TEST_VQ_NAME);
	if (IS_ERR(vq)) {
		err = PTR_ERR(vq);
		dev_err(&vdev->dev, "cannot set up virtqueue: %d\n", err);
		goto err_ida;
	}
	vt->vq = vq;

	/* Spec 3.1.1 step 8: DRIVER_OK before any buffer is made available. */
	virtio_device_ready(vdev);

	vt->misc.minor = MISC_DYNAMIC_MINOR;
	vt->misc.name = vt->name;
	vt->misc.fops = &vt_fops;
	vt->misc.parent = &vdev->dev;
	err = misc_register(&vt->misc);
	if (err) {
		dev_err(&vdev->dev, "cannot register /dev/%s: %d\n",
			vt->name, err);
		goto err_reset;
	}
	dev_info(&vdev->dev, "virtio-test device ready at /dev/%s\n",
		 vt->name);
	return 0;

err_reset:
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
err_ida:
	ida_free(&vt_ida, vt->id);
err_free:
	vdev->priv = NULL;
	kfree(vt);
	return err;
}

static void vt_remove(struct virtio_device *vdev)
{
	struct vt_dev *vt = vdev->priv;
	struct vt_req *r, *tmp;
	LIST_HEAD(dead);

	/* From here on every user gets -ENODEV and nobody touches the vq. */
	spin_lock_irq(&vt->lock);
	vt->removed = true;
	vt_wake_all(vt);
	spin_unlock_irq(&vt->lock);

	misc_deregister(&vt->misc);	/* no new opens after this */
	ida_free(&vt_ida, vt->id);

	/*
	 * Spec 2.4: after a reset the device no longer uses our buffers, so
	 * the requests still in flight can be freed once the queue is gone.
	 */
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	cancel_work_sync(&vt->break_work);	/* no callback can queue it now */

	spin_lock_irq(&vt->lock);
	vt->vq = NULL;
	list_splice_init(&vt->inflight, &dead);
	list_for_each_entry(r, &dead, node)
		if (r->owner)
			r->owner->pending--;
	vt_wake_all(vt);
	spin_unlock_irq(&vt->lock);

	list_for_each_entry_safe(r, tmp, &dead, node)
		kfree(r);
	vdev->priv = NULL;
	kref_put(&vt->ref, vt_free);	/* open files hold their own refs */
}

static const struct virtio_device_id id_table[] = {
	{ VIRTIO_ID_TEST, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static const unsigned int features[] = {
	VIRTIO_TEST_F_CAN_PRINT,
};

static struct virtio_driver virtio_test_driver = {
	.feature_table = features,
	.feature_table_size = ARRAY_SIZE(features),
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = id_table,
	.validate = vt_validate,
	.probe = vt_probe,
	.remove = vt_remove,
};

module_virtio_driver(virtio_test_driver);
MODULE_DEVICE_TABLE(virtio, id_table);
MODULE_DESCRIPTION("virtio-ts virtio-test device driver");
MODULE_LICENSE("GPL");
